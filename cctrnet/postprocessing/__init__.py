"""Connected-component post-processing of predicted label maps, decided from data the user has.

Kept free of imports: the command-line parsers read the constant below.
"""

# where cctr_predict --save-without-postprocessing and cctr_train --val put the label maps before post-processing
UNPROCESSED_SUBFOLDER = "without_postprocessing"
