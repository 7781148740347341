"""ablate: ablation studies for isolated sign-language recognition (Kaggle asl-signs landmarks)."""

__version__ = "0.1.0"
