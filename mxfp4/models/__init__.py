"""Models that run on MXFP4 weights: GPT-OSS (gpt-oss-20b / gpt-oss-120b) in Hugging Face checkpoint layout."""

from .gpt_oss import PRESETS, CheckpointError, GptOss, GptOssConfig

__all__ = ["CheckpointError", "GptOss", "GptOssConfig", "PRESETS"]
