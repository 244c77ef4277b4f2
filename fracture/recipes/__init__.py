"""Training recipes: the training configuration's schema (:mod:`.config`, validated once at the edge) and
the shipped recipes beside it (``*.json`` here, listed, loaded and reproduced by :mod:`.catalogue`).

Below training on purpose: the Train form, the CLI, the trainer and a model card's reproduce command all
read the same schema, and none of them needs torch for it.
"""
