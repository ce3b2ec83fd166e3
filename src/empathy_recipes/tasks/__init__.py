"""distilabel Tasks shared by the stages (each in its own module: judge scores, data quality, pairwise)."""
