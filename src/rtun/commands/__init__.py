"""The reach-back commands, one module each: its options beside its handler (see rtun.command)."""
