"""Tables 1-3 of the paper (and CE vs CLIP-Lung per backbone) from run records.

  build    the numbers: which records (one setting), each cell's statistics, the comparisons
  render   the same numbers as LaTeX and Markdown, with their captions and marks
  levels   which marks a comparison may print (``benchmarks.stats.verdicts``) and the smallest difference it could detect
  cli      ``python -m benchmarks.tables`` (its docstring is the user's guide) and the files it writes
"""
from benchmarks.tables.build import PAPER, build, build_backbones, labels_of, select, select_backbones, setting_tag
from benchmarks.tables.cli import main, write_backbones, write_tables
from benchmarks.tables.render import caption_for, partial_note, render_3, render_12, render_backbones, source_note, tex_escape

__all__ = ["PAPER", "build", "build_backbones", "caption_for", "labels_of", "main", "partial_note", "render_12", "render_3", "render_backbones", "source_note", "select",
           "select_backbones", "setting_tag", "tex_escape", "write_backbones", "write_tables"]
