"""Downloads of the datasets that can be downloaded: MNIST, CIFAR-10 and CIFAR-100 (MindCV's
`mindcv.data.dataset_download`: `MnistDownload(root).download()`, `.path`).

The files come from their standard addresses and are checked against their published md5 sums, through
`mindcv.io.download.DownLoad` (atomic, resumable, limited in size and time). Files already in place are not
downloaded again; a file of a dataset's name with another md5 is left alone and is an error (it may be another
dataset's). Several processes (the ranks of a distributed run) download and unpack once: the first takes a lock in
the dataset's folder, the others wait for it (at most `LOCK_WAIT_S`) and then find the files. Without a network
the error is one line naming the files to place and where.

`get_dataset_download_root()`: where `create_dataset(root=None)` looks for (and downloads) a dataset, in the
folder named after it: `$MINDCV_HOME/dataset` when MINDCV_HOME is set, else MindCV's `~/.mindspore/dataset`.
"""
import os

from ..io.download import DownLoad, DownloadError, ExistingFileError, exclusive

LOCK_WAIT_S = 2 * 3600.0  # how long a process waits for another one's download of the same dataset


def get_dataset_download_root():
    """`$MINDCV_HOME/dataset` when MINDCV_HOME is set, else MindCV's `~/.mindspore/dataset`."""
    home = os.environ.get("MINDCV_HOME")
    if home:
        return os.path.join(os.path.expanduser(home), "dataset")
    return os.path.join(os.path.expanduser("~"), ".mindspore", "dataset")


def _reason(error):
    """The network error under a DownloadError of `fetch` (which raises it `from None`), else the message."""
    cause = error.__context__
    if cause is not None:
        return str(getattr(cause, "reason", None) or cause)
    return str(error)


class DatasetDownload:
    """Download `resources` (file name, md5, addresses to try in turn) into `root`; `archive` ones are then
    extracted there. `path` is the folder that holds the dataset's files afterwards."""

    title = ""
    name = ""
    resources = ()  # (file name, md5, (url, ...))
    archive = False
    folder = ""  # the folder the archive unpacks into, under root
    files = ()  # the dataset's files in `path`
    train_files, test_files = (), ()  # an archive's files of each split (the readers in mindcv.data.dataset)
    contents = ""  # how the message names them, for an archive
    max_bytes = 512 << 20  # the largest download, and the most an archive may unpack to (CIFAR's: 170 MB, 180 MB)

    def __init__(self, root=None):
        self.root = os.path.expanduser(root) if root else os.path.join(get_dataset_download_root(), self.name)
        self.path = os.path.join(self.root, self.folder) if self.folder else self.root

    def downloaded(self):
        return all(os.path.isfile(os.path.join(self.path, f)) for f in self.files)

    def download(self):
        """Fetch (and unpack) the files unless they are there. DownloadError (a ValueError) when it cannot."""
        if self.downloaded():
            return self.path
        os.makedirs(self.root, exist_ok=True)
        with exclusive(os.path.join(self.root, f".{self.name}.download.lock"), LOCK_WAIT_S, self.title):
            if self.downloaded():  # another process finished it while this one waited
                return self.path
            self._download_all()
            if not self.downloaded():
                raise DownloadError(f"{self.title} was downloaded and unpacked, but {self.path} does not hold "
                                    f"{self.contents or ', '.join(self.files)}: what was there before is left as it "
                                    "was; move it away and download again")
        return self.path

    def _download_all(self):
        helper = DownLoad()
        for filename, md5, urls in self.resources:
            failures = []
            for url in urls:
                try:
                    if self.archive:
                        helper.download_and_extract_archive(url, self.root, filename=filename, md5=md5,
                                                            max_bytes=self.max_bytes,
                                                            max_unpacked_bytes=self.max_bytes)
                    else:
                        helper.download_url(url, self.root, filename=filename, md5=md5, max_bytes=self.max_bytes)
                    break
                except ExistingFileError:  # the same at every address: a file of the user's is in the way
                    raise
                except DownloadError as error:
                    failures.append(f"{url}: {_reason(error)}")
            else:
                raise DownloadError(f"cannot download {self.title} ({'; '.join(failures)}); {self.by_hand()}")

    def by_hand(self):
        """What to fetch by hand, and where to put it."""
        if self.archive:
            return (f"download {self.resources[0][2][0]} and put it in {self.root} (download=True unpacks it), or "
                    f"unpack it there yourself so that {self.path} holds {self.contents}")
        names = ", ".join(f for f, _, _ in self.resources)
        return (f"download {names} from {self.resources[0][2][0].rsplit('/', 1)[0]}/ and put "
                f"{'it' if len(self.resources) == 1 else 'them'} in {self.root}")


class MnistDownload(DatasetDownload):
    title = "MNIST"
    name = "mnist"
    # torchvision's mirror first (yann.lecun.com, MindCV's address, often refuses downloads)
    resources = tuple(
        (f, md5, (f"https://ossci-datasets.s3.amazonaws.com/mnist/{f}", f"http://yann.lecun.com/exdb/mnist/{f}"))
        for f, md5 in (("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
                       ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
                       ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
                       ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c")))
    files = tuple(f for f, _, _ in resources)

    def downloaded(self):
        # the unpacked idx files count too
        return all(os.path.isfile(os.path.join(self.path, f)) or os.path.isfile(os.path.join(self.path, f[:-3]))
                   for f in self.files)


class Cifar10Download(DatasetDownload):
    title = "CIFAR-10"
    name = "cifar10"
    resources = (("cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530",
                  ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",)),)
    archive = True
    folder = "cifar-10-batches-bin"
    train_files, test_files = tuple(f"data_batch_{i}.bin" for i in range(1, 6)), ("test_batch.bin",)
    files = train_files + test_files
    contents = "data_batch_1.bin .. data_batch_5.bin and test_batch.bin"


class Cifar100Download(DatasetDownload):
    title = "CIFAR-100"
    name = "cifar100"
    resources = (("cifar-100-binary.tar.gz", "03b5dce01913d631647c71ecec9e9cb8",
                  ("https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",)),)
    archive = True
    folder = "cifar-100-binary"
    train_files, test_files = ("train.bin",), ("test.bin",)
    files = train_files + test_files
    contents = "train.bin and test.bin"


DOWNLOADS = {"mnist": MnistDownload, "cifar10": Cifar10Download, "cifar100": Cifar100Download}
