"""uqseg: how good is a segmentation nobody has checked, and how sure is the model?"""

__version__ = "0.1.0"
SCHEMA = "uqseg/1"
