-- Done copying: close the compaction's file.
detach nudge_compacted
