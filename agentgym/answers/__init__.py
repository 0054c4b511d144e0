"""Answer checking: the leaf that tools (a reward tool), interactions (a teacher) and rewards share."""
