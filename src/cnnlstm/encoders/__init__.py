"""cnnlstm.encoders"""
