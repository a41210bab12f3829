# Ex2 Q4 with os.listdir and str.split on the file names.


class Market1501(Dataset):
    def __init__(self, root: str | os.PathLike, split: str = "train",
                 transform: Callable[[Image.Image], Any] | None = None):
        if split not in SPLIT_FOLDERS:
            raise ValueError("split should be train, query or gallery, not " + str(split))
        self.root = root
        self.split = split
        self.transform = transform
        directory = os.path.join(root, SPLIT_FOLDERS[split])
        names = sorted(name for name in os.listdir(directory) if name.endswith(".jpg"))
        self.imgs, self.ids, self.junk = [], [], []
        for name in names:
            path = os.path.join(directory, name)
            pid = self.get_id(name)
            if pid == -1:
                self.junk.append(path)  # junk boxes are not used at all
            else:
                self.imgs.append(path)
                self.ids.append(pid)
        self.cameras = [self.get_camera(path) for path in self.imgs]
        self.unique_ids = sorted(set(self.ids))
        self.labels = [self.unique_ids.index(pid) for pid in self.ids]

    @staticmethod
    def get_id(file_path: str | os.PathLike) -> int:
        return int(os.path.basename(file_path).split("_")[0])

    @staticmethod
    def get_camera(file_path: str | os.PathLike) -> int:
        # second field is like c3s1: the digit after the c
        return int(os.path.basename(file_path).split("_")[1][1])

    def __getitem__(self, index: int) -> tuple[Any, int]:
        img = Image.open(self.imgs[index]).convert("RGB")
        if self.transform:
            img = self.transform(img)
        return img, self.labels[index]
