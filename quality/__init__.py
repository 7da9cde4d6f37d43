"""Quality: inter-annotator agreement, gold items, labeler reliability, consensus and review."""
