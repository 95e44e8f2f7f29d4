"""captum_smocam: SMOCAM attention masks for 3-D convolutional regression models."""

__version__ = "0.1.0"
