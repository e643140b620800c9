"""``cctr_report``: one self-contained HTML page per model folder, regenerated from the files on disk."""
