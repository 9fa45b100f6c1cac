"""CLIP-Lung's model parts: text encoders, prompt learners, attribute weighting, alignment losses."""
