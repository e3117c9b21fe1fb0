"""PSR-FER: Pyramid with Super Resolution for in-the-wild facial expression recognition."""

__version__ = "0.1.0"
