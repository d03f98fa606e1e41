"""cnnlstm.layers"""
