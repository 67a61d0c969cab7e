"""Real components for the tests: an OpenSSH sshd on 127.0.0.1, ssh -R forwards, rtun daemons."""
