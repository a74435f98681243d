"""mmdistill: multimodal knowledge distillation on video, as a DVC pipeline.

Stage modules (one per DVC stage): generate, prepare, extract, teacher, distill, evaluate.
Library modules they share: config (params.yaml), runtime (logging, seeds, devices), paths,
datasets, synthetic, media (decoding), store (HDF5, the only h5py user), csd (CMU-MultimodalSDK
files), clip (frozen open_clip), features (model inputs), models, losses, training, metrics.
"""

__version__ = "0.1.0"
