"""Files in: Keras .h5 and .keras weights (loader), safetensors, transformers' config.json and
preprocessor_config.json (hf_config), and the registry of the 22 published variants' downloads.

Every reader here treats its file as a stranger's: sizes and shapes are checked against what the
network (``mobilenetv2.network``) expects before anything is allocated or read."""
