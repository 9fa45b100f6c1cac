"""The method registry (one file per method); filled by the training-loop issue."""
