"""mmdistill: multimodal knowledge distillation on video, as a DVC pipeline.

Stage modules (one per DVC stage): generate, prepare, extract, teacher, distill, evaluate.
Library modules they share: config, runtime, datasets, media, store, clip, models, losses,
metrics, synthetic.
"""

__version__ = "0.1.0"
