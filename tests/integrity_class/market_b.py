# Ex2 Q4 with glob and a regular expression of my own.
import glob

NAME_PATTERN = re.compile(r"(-?\d+)_c(\d)s\d+_")


class Market1501(Dataset):
    def __init__(self, root: str | os.PathLike, split: str = "train",
                 transform: Callable[[Image.Image], Any] | None = None):
        folders = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
        if split not in folders:
            raise ValueError(f"unknown split {split!r}")
        self.root, self.split, self.transform = Path(root), split, transform
        files = glob.glob(os.path.join(str(root), folders[split], "*.jpg"))
        files.sort()  # glob gives no order
        if not files:
            raise ValueError(f"no images in {os.path.join(str(root), folders[split])}")
        # junk images have the id -1: keep them apart, they are never trained on
        self.junk = [f for f in files if self.get_id(f) < 0]
        self.imgs = [f for f in files if self.get_id(f) >= 0]
        self.ids = list(map(self.get_id, self.imgs))
        self.cameras = list(map(self.get_camera, self.imgs))
        self.unique_ids = sorted(set(self.ids))
        to_label = dict(zip(self.unique_ids, range(len(self.unique_ids))))
        self.labels = [to_label[i] for i in self.ids]

    @staticmethod
    def get_id(file_path: str | os.PathLike) -> int:
        found = NAME_PATTERN.match(os.path.basename(str(file_path)))
        if found is None:
            raise ValueError(f"bad Market-1501 name: {file_path}")
        return int(found.group(1))

    @staticmethod
    def get_camera(file_path: str | os.PathLike) -> int:
        return int(NAME_PATTERN.match(os.path.basename(str(file_path))).group(2))

    def __getitem__(self, index: int) -> tuple[Any, int]:
        with open(self.imgs[index], "rb") as handle:
            picture = Image.open(handle).convert("RGB")
        return (self.transform(picture) if self.transform is not None else picture), self.labels[index]
