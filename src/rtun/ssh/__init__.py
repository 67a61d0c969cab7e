"""The one place that runs ssh: ``argv`` builds every ssh command line and reads ``ssh -G``
(pure), ``hints`` turns ssh's failures into advice, ``mux`` speaks the control socket's protocol,
``process`` runs ssh (bounded requests, the agent's ``-N`` master), ``banner`` checks that an
sshd answers. `rtun ssh`'s own login (its control session) is rtun.session.master, on top of
these. Nothing here is imported at package import: `rtun ssh` starts ssh first.
"""
