"""How an account came to belong to its person: the values stored on BELONGS_TO edges."""

METHOD_NEW = "new_person"
METHOD_DETERMINISTIC = "deterministic"
METHOD_PROBABILISTIC = "probabilistic"
METHOD_MANUAL = "manual"
