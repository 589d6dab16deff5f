"""The Modality Worklist: Vetmanager schedules an examination, the modality asks for today's
animals, and the images come back carrying the order they belong to."""
