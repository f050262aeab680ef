import torch

def train(:
    pass  # a syntax error: the file is never imported for this assignment
