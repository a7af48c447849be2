"""The one adapter to ComfyUI's internals, written against ComfyUI 0.3.75 (the minimum the pack supports).

Everything of ComfyUI that is not its versioned ``comfy_api`` is used here and nowhere else in the pack:

* ``models``: model folders (``folder_paths``), the memory manager (``comfy.model_management``), ``ModelPatcher``,
  progress bars, Cancel;
* ``native``: the U-Nets as core models (``comfy.model_base``, ``comfy.model_sampling``, ``comfy.latent_formats``,
  ``comfy.conds``, ``comfy.supported_models_base``), the official sampler as a ``comfy.samplers.Sampler``, the core
  VIDEO type;
* ``previews``: live previews (``comfy.cli_args``' preview method, ``latent_preview``).

A newer ComfyUI that changes one of these needs a change here only.
"""
