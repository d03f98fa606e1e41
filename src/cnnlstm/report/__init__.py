"""cnnlstm.report"""
