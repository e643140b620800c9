"""Connected-component post-processing of predicted label maps, decided from data the user has."""
