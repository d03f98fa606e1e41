"""cnnlstm.tune"""
