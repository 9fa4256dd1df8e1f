"""Cross-cutting pieces shared by every stage: the example schema, answer handling, Hub targets."""
