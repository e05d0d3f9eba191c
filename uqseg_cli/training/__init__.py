"""Training the segmentation networks: data (slices, patches, splits), augmentation and the loop."""
