"""Inputs and outputs around the network: images to tensors as Keras does (preprocessing) and as
transformers' image processor does (hf_processing, torch_resize), and class indices back to
ImageNet's names (imagenet)."""
