"""What the user points at: video files, globs, lists and manifests; camera intrinsics.
Imports ``common`` and ``config``'s format checks (never the whole ``RunConfig``).
"""
