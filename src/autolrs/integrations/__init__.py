"""Adapters that run autolrs inside training frameworks; each imports its framework lazily.

- :mod:`autolrs.integrations.lightning`: ``AutoLRSCallback`` for Lightning's ``Trainer``
  (``pip install 'autolrs[lightning]'``);
- :mod:`autolrs.integrations.transformers`: ``AutoLRSCallback`` for Hugging Face's ``Trainer``
  (``pip install 'autolrs[transformers]'``).

The adapters are thin: they read the loss of each optimizer step, hand it to :class:`autolrs.AutoLRS` and let it
set the LR; the search itself is the framework-free controller's.
"""
