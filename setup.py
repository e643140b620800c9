from setuptools import find_packages, setup

setup(
    name="cctrnet",
    version="0.1.0",
    description="Self-configuring semi-supervised segmentation of 3D medical volumes with 2D networks (CCT-R)",
    long_description=open("README.md").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["cctrnet", "cctrnet.*", "dataset_conversion", "dataset_conversion.*"]),
    package_data={"dataset_conversion": ["splits/*.json"]},
    install_requires=[
        "torch>=2.1",
        "SimpleITK>=2.3",
        "batchgenerators>=0.25",
        "acvl-utils>=0.2",
        "dynamic-network-architectures>=0.4",
        "numpy>=1.24",
        "psutil>=5.9",
        "scipy>=1.10",
        "tqdm>=4.60",
        "matplotlib>=3.7",
    ],
    extras_require={
        "dask": ["dask[distributed]>=2024.1"],
        "test": ["pytest>=7", "hypothesis>=6", "dask[distributed]>=2024.1", "h5py>=3"],
        "transunet": ["h5py>=3"],  # reading TransUNet's preprocessed Synapse release (its test volumes are HDF5)
        "reproduce": ["nilearn>=0.10"],
    },
    entry_points={
        "console_scripts": [
            "cctr_generate_phantom=dataset_conversion.phantom:main",
            "cctr_generate_brain=dataset_conversion.brain_phantom:main",
            "cctr_generate_acdc_population=dataset_conversion.acdc_population:main",
            "cctr_convert_acdc=dataset_conversion.acdc:main",
            "cctr_convert_synapse=dataset_conversion.synapse:main",
            "cctr_plan_and_preprocess=cctrnet.cli.plan_and_preprocess:main",
            "cctr_register=cctrnet.cli.register:main",
            "cctr_train=cctrnet.cli.train:main",
            "cctr_predict=cctrnet.cli.predict:main",
            "cctr_determine_postprocessing=cctrnet.cli.determine_postprocessing:main",
            "cctr_evaluate=cctrnet.cli.evaluate:main",
            "cctr_suggest_labels=cctrnet.cli.suggest_labels:main",
            "cctr_report=cctrnet.cli.report:main",
        ]
    },
)
