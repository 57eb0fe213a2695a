"""The public API's shared parts: the error shape (``errors``) and pagination (``pagination``)."""
