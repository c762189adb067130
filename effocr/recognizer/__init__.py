"""The recognizer: a timm encoder trained with supervised contrastive loss, and its reference index."""
