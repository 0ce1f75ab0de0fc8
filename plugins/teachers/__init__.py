"""Built-in teachers: the models that write chain-of-thought rationales."""
