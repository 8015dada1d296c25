"""Placeholder: this family module is being written; it registers no architecture yet."""
