"""usb_model: the USB method (Unified Synthetic Brain) on tensors, without BIDS or nipype.

One KL autoencoder shared by lesion masks and brain images, and two latent denoisers
(USB_lesion, USB_brain) that condition on each other's one-step clean estimates. See
``usb_model.tasks`` for the four tasks and ``usb_model.train`` for training.
"""

__version__ = "0.1.0"
