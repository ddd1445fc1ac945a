"""memlib: a small PyTorch library to reproduce "Exploring Memorization in Adversarial Training"
(Dong et al., ICLR 2022). Layers, each importing only those below it:
config -> data, models -> attacks -> methods -> train, evaluate -> analysis -> reproduce."""

__version__ = "0.1.0"
