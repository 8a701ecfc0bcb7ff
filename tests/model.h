/* model: shared by the model test and its fuzzer */
