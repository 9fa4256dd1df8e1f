"""Stage 1: tasks -> teachers -> teacher-rationale dataset repos (``make push-data``)."""
