# Ex2 Q4 with pathlib: first a list of (path, id, camera) records, then the attributes.


class Market1501(Dataset):
    def __init__(self, root: str | os.PathLike, split: str = "train",
                 transform: Callable[[Image.Image], Any] | None = None):
        try:
            folder = Path(root) / SPLIT_FOLDERS[split]
        except KeyError:
            raise ValueError(f"split: expected train, query or gallery, got {split}") from None
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} does not exist")
        self.root = Path(root)
        self.split = split
        self.transform = transform
        records = []
        for image_path in sorted(folder.glob("*.jpg")):
            person = self.get_id(image_path)
            records.append((str(image_path), person, self.get_camera(image_path)))
        self.junk = [path for path, person, _ in records if person == JUNK_ID]
        kept = [record for record in records if record[1] != JUNK_ID]
        self.imgs = [record[0] for record in kept]
        self.ids = [record[1] for record in kept]
        self.cameras = [record[2] for record in kept]
        self.unique_ids = sorted({record[1] for record in kept})
        self.label_of = {person: position for position, person in enumerate(self.unique_ids)}
        self.labels = [self.label_of[person] for person in self.ids]

    @staticmethod
    def get_id(file_path: str | os.PathLike) -> int:
        name = Path(file_path).name
        return int(name[: name.index("_")])

    @staticmethod
    def get_camera(file_path: str | os.PathLike) -> int:
        name = Path(file_path).name
        return int(name.split("_c", 1)[1][0])

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = Image.open(self.imgs[index])
        image = image.convert("RGB")
        if self.transform is not None:
            image = self.transform(image)
        label = self.label_of[self.ids[index]]
        return image, label
