"""One-step sessions from your computer: `rtun ssh HOST`, `rtun install HOST`, `rtun doctor`.

Layout, one way down: ``ssh``, ``install`` and ``doctor`` are the commands; ``master`` runs the
login (a control master of rtun's own and its control session, on rtun.ssh; ``spawn`` starts it);
``localdaemon`` makes sure the daemon answers here; ``installer`` and ``bundle`` build and place
the single-file client; ``checks`` are the doctor's; ``identity`` is the laptop id; ``sshopts``
(where each of ssh's options goes) and ``remote`` (what runs on the server) are pure. See docs/sessions.md.
"""
