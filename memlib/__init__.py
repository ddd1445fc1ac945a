"""memlib: a small PyTorch library to reproduce "Exploring Memorization in Adversarial Training"
(Dong et al., ICLR 2022). Layers, each importing only those below it (tests/test_packaging.py checks):
config -> io, paper -> data, models -> runs, attacks -> methods -> evaluate -> train -> analysis -> report ->
reproduce -> the command line (__main__). Notebooks sit on top; nothing in memlib imports a notebook."""

__version__ = "0.1.0"
