"""Pictures of what a network learned, for ``python -m jaxcnn.visualize``.

- ``stages.py``: a model's stages found from the model itself (every module call intercepted),
  their outputs on given images, and the layer that class activation maps use;
- ``cam.py``: Grad-CAM on that layer;
- ``filters.py``: the first convolution's filters as tiles, ViT's position-embedding similarity;
- ``mistakes.py``: predictions over the eval split, confusion matrix, the most confident errors;
- ``tutorial.py``: the tutorial's Sobel and max-pool examples computed by the framework;
- ``images.py``: image files as model inputs, and model inputs back as displayable images;
- ``draw.py``: the matplotlib figures (Agg, PNG); ``page.py``: all of them for one run, with
  a Markdown page.
"""
