"""Plain-language help: one line a clinician understands for every metric and training control.

Pages pass `help_text(term)` to widgets and metrics, and Home shows the whole glossary, so a term is
explained the same way everywhere.
"""

from __future__ import annotations

GLOSSARY: dict[str, str] = {
    "accuracy": "The share of all images the model labels correctly. It flatters a model when one class is far more common.",
    "sensitivity": "Of the patients who have the disease, the share the model flags: 0.95 means it finds 95 of 100 sick "
                   "patients and misses 5.",
    "specificity": "Of the healthy patients, the share the model clears: 0.90 means 90 of 100 are cleared and 10 get a "
                   "false alarm.",
    "PPV": "Of the images the model flags, the share that really show the disease (positive predictive value). It drops "
           "when the disease is rare.",
    "NPV": "Of the images the model clears, the share that really are healthy (negative predictive value). It drops when "
           "the disease is common.",
    "balanced accuracy": "The mean of sensitivity and specificity: accuracy as if both classes were equally common, so the "
                         "common class cannot flatter it.",
    "F1": "One number that balances finding the sick (sensitivity) against false alarms (PPV); 1 is perfect.",
    "AUC": "How well the model ranks sick patients above healthy ones, whatever the threshold: 1.0 is perfect, 0.5 is a "
           "coin toss.",
    "kappa": "Agreement between the model and the true labels beyond what chance alone would give: 0 is chance, 1 is "
             "perfect. The weighted kind counts near-misses less.",
    "average precision": "The area under the precision-recall curve: how clean the flagged images stay as the threshold "
                         "drops to find more of the sick; 1 is perfect, the disease's share is chance.",
    "Brier score": "The mean squared gap between the model's probability and what the image really was (0 or 1): 0 is "
                   "perfect; it punishes confident mistakes most.",
    "ECE": "Expected calibration error: how far, on average over 10 bins of probability, the model's percentages sit from "
           "how often the disease really is present; 0 is perfectly calibrated.",
    "calibration": "Whether the model's percentages can be taken at face value: of the images it gives 80%, about 80 in "
                   "100 should really have the disease.",
    "threshold": "The cut-off on the model's probability above which an image is called positive. Lower it to miss fewer "
                 "sick patients, at the price of more false alarms.",
    "confusion matrix": "A table of how many images of each true class the model put in each class: the diagonal is "
                        "right, the rest are its mistakes.",
    "ROC curve": "Every trade-off between finding the sick (up) and false alarms (right) the model offers as its "
                 "threshold moves; the dot is the threshold in use.",
    "epoch": "One pass of the model over every training image. Training runs several, and the curves show one point each.",
    "learning rate": "How big a correction the model makes after each small group of images: too big and it never settles, "
                     "too small and it learns slowly.",
    "batch size": "How many images the model looks at before each correction. Bigger batches are faster on a GPU and use "
                  "more memory.",
    "image size": "The side, in pixels, images are resized to before the model sees them. Bigger shows finer detail and "
                  "trains slower.",
    "seed": "The number behind every random choice of a training: the split, the starting weights, the augmentation. "
            "Another seed is another draw of the same recipe; comparing a few shows how much is luck.",
    "reproducible": "Trains so that the same images, settings and seed give the same model to the last digit (TensorFlow's "
                    "op determinism), when trained from start to end without a stop. Off, two trainings differ a little.",
    "augmentation": "Small random changes to the training images (mirroring, turning, brightness) so the model learns the "
                    "disease, not the exact pictures.",
    "class weights": "Counting mistakes on the rarer class more, so the model cannot score well by calling everything the "
                     "common class.",
    "weight averaging": "Keeping a running average of the model's settings over the last few epochs and using the average: "
                        "it depends less on the exact epoch training stopped at. 0 epochs turns it off.",
    "mixup": "Training on blends of two images, the answer blended alike (e.g. 70% pneumonia), so the model learns to be "
             "less sure of itself. Two classes only; 0.2 is usual, 0 turns it off. Training accuracy counts blends and reads low.",
    "CutMix": "Training on images with a box cut from another image pasted in, the answer blended by the box's area "
              "(e.g. 30% pneumonia). Two classes only; 1.0 is usual, 0 turns it off. Not together with mixup.",
    "cosine schedule": "The learning rate starts where you set it and slides down along half a cosine curve to almost "
                       "nothing by the last epoch, instead of being halved when the validation loss stops improving. "
                       "Extending a run stretches the curve.",
    "fine-tuning": "A second phase for a pretrained backbone, after epochs that train only the new head "
                   "(feature_extraction): its last layers, or all with 0, then train too, at LR 0.0001. The head first "
                   "spares the pretrained features a random head's big early corrections.",
    "border crop": "Cutting this share off every side of the image inside the model, so it looks at the middle (the lungs) "
                   "and not at side markers or the edges of the exposure, which differ between hospitals. 0.1 keeps the "
                   "central 80%; Grad-CAM shows the cut borders cold.",
    "intensity": "Each image's grey levels remapped inside the model. 'equalise' spreads them evenly, so any exposure "
                 "change that keeps their order gives the same image; 'standardise' sets mean and spread; 'as is' leaves "
                 "them to the network.",
    "validation split": "Images kept out of training and used to choose the best epoch and the threshold; the test split is "
                        "kept for the final, honest score.",
    "Grad-CAM": "A heat map of the image regions that pushed the model towards its answer. It shows where the model "
                "looked, not where the disease is.",
    "unusual image": "An image further from the ones the model learned from, in what it sees, than 99 of 100 of its own "
                     "validation images (another scanner, body part or modality): its answer may not hold there.",
    "borderline call": "The validation images scored most like this one were not clearly more often of the called class "
                       "than not (95% interval reaches 50%). At another hospital, mistakes were mostly confident calls.",
}


def help_text(term: str) -> str:
    """The one-line explanation of a glossary term (KeyError for an unknown term, so a typo fails in tests)."""
    return GLOSSARY[term]


def term_for(metric_key: str) -> str:
    """The glossary term of a metric key as core.metrics names it ('auc' -> 'AUC')."""
    return {"auc": "AUC", "ppv": "PPV", "npv": "NPV", "f1": "F1", "balanced_accuracy": "balanced accuracy",
            "average_precision": "average precision", "brier": "Brier score", "ece": "ECE"}.get(metric_key, metric_key)
