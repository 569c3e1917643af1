"""Which ImageNet class is the right ``looks_like`` for each breed folder of ``ood/dogs``.

The folders are the Kaggle "70 Dog Breeds" names less the Imagewoof five. A breed maps to the
ImageNet-1k classes that are that breed (model/looks_like.py ``OTHER_CLASSES``): one class, or
several where the folder holds more than one ImageNet breed (corgi: Pembroke and Cardigan;
poodle and schnauzer: their three sizes). An empty tuple: ImageNet has no class for the breed
(a cross such as the labradoodle, or a breed it lacks such as the bull terrier); those photos
are counted apart. Each folder was looked at before mapping (American Spaniel is the American
water spaniel, which ImageNet lacks; Irish Spaniel is the Irish water spaniel).
"""

from __future__ import annotations

OOD_DOG_CLASSES: dict[str, tuple[str, ...]] = {
    "afghan": ("n02088094",),  # Afghan hound
    "african-wild-dog": ("n02116738",),  # African hunting dog
    "airedale": ("n02096051",),
    "american-hairless": (),  # American hairless terrier
    "american-spaniel": (),  # American water spaniel
    "basenji": ("n02110806",),
    "basset": ("n02088238",),
    "bearded-collie": (),
    "bermaise": ("n02107683",),  # Bernese mountain dog
    "bichon-frise": (),
    "blenheim": ("n02086646",),
    "bloodhound": ("n02088466",),
    "bluetick": ("n02088632",),
    "border-collie": ("n02106166",),
    "borzoi": ("n02090622",),
    "boston-terrier": ("n02096585",),
    "boxer": ("n02108089",),
    "bull-mastiff": ("n02108422",),
    "bull-terrier": (),  # ImageNet has the Staffordshire breeds only
    "bulldog": (),  # the English bulldog; the French one has its own class
    "cairn": ("n02096177",),
    "chihuahua": ("n02085620",),
    "chinese-crested": (),
    "chow": ("n02112137",),
    "clumber": ("n02101556",),
    "cockapoo": (),
    "cocker": ("n02102318",),
    "collie": ("n02106030",),
    "corgi": ("n02113023", "n02113186"),  # Pembroke, Cardigan
    "coyote": ("n02114855",),
    "dalmation": ("n02110341",),
    "dhole": ("n02115913",),
    "doberman": ("n02107142",),
    "elk-hound": ("n02091467",),  # Norwegian elkhound
    "french-bulldog": ("n02108915",),
    "german-sheperd": ("n02106662",),
    "great-dane": ("n02109047",),
    "great-perenees": ("n02111500",),
    "greyhound": (),  # ImageNet has the Italian greyhound and the whippet only
    "groenendael": ("n02105056",),
    "irish-spaniel": ("n02102973",),  # Irish water spaniel
    "irish-wolfhound": ("n02090721",),
    "japanese-spaniel": ("n02085782",),
    "komondor": ("n02105505",),
    "labradoodle": (),
    "labrador": ("n02099712",),
    "lhasa": ("n02098413",),
    "malinois": ("n02105162",),
    "maltese": ("n02085936",),
    "mex-hairless": ("n02113978",),
    "newfoundland": ("n02111277",),
    "pekinese": ("n02086079",),
    "pit-bull": ("n02093428",),  # American Staffordshire terrier, "pit bull terrier"
    "pomeranian": ("n02112018",),
    "poodle": ("n02113624", "n02113712", "n02113799"),  # toy, miniature, standard
    "pug": ("n02110958",),
    "rottweiler": ("n02106550",),
    "saint-bernard": ("n02109525",),
    "schnauzer": ("n02097047", "n02097130", "n02097209"),  # miniature, giant, standard
    "scotch-terrier": ("n02097298",),
    "shar-pei": (),
    "shiba-inu": (),
    "siberian-husky": ("n02110185",),
    "vizsla": ("n02100583",),
    "yorkie": ("n02094433",),
}
