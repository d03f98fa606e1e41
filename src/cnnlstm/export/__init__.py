"""cnnlstm.export"""
