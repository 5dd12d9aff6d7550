"""Watermark detection (`decode detect`): the green tokens of a text counted against the
greenlists the `watermark` stage draws (`detect`), scored as transformers' WatermarkDetector."""
