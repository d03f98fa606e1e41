"""cnnlstm.data"""
