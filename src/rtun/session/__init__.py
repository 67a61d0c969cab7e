"""One-step sessions from your computer: `rtun ssh HOST`, `rtun install HOST`, `rtun doctor`.

Layout, one way down: ``ssh``, ``install`` and ``doctor`` are the commands; ``master`` runs the
ssh connection (a control master of rtun's own and its control session; ``spawn`` starts it);
``localdaemon`` makes sure the daemon answers here; ``installer`` and ``bundle`` build and place
the single-file client; ``checks`` are the doctor's; ``identity`` is the laptop id; ``sshopts``
(ssh's command line) and ``remote`` (what runs on the server) are pure. See docs/sessions.md.
"""
