"""The built-in certificate authority of the mesh."""
